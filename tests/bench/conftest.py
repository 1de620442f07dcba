"""The benchmarks run on the NER tests' tiny random-weight model."""

from tests.nlp.conftest import tiny_model_dir  # noqa: F401  (a fixture)
