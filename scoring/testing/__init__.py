"""Test doubles that ship with the package (a real tiny SavedModel exporter and an in-process TF Serving
servicer), used by the tests and by ``fraudstream bench scoring``: no mocks of TensorFlow anywhere."""
