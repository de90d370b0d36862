# The worker / trainer / dashboard image: one Python 3.11 image, the role chosen by the command.
FROM python:3.11-slim-bookworm AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 TF_CPP_MIN_LOG_LEVEL=2
WORKDIR /app
COPY pyproject.toml README.md ./
COPY config ./config
COPY fraudstream ./fraudstream
COPY streams ./streams
COPY features ./features
COPY scoring ./scoring
COPY training ./training
COPY schemas ./schemas
COPY monitoring ./monitoring
COPY deploy ./deploy
RUN pip install . && useradd --system --uid 10001 fraudstream && mkdir -p /data && chown fraudstream /data
USER fraudstream
ENV FRAUD_HOME=/data
ENTRYPOINT ["fraudstream"]
CMD ["worker"]
