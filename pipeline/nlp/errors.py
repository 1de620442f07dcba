"""Error messages of the NER stage, one named constant each, saying what to do."""

E001 = "E001: NER model folder {path} not found. Train one with `ehr-pipeline train-ner` or set EHR_NER_MODEL_PATH."
E002 = (
    "E002: NER model folder {path} has no model.safetensors. Only safetensors checkpoints are loaded; "
    "re-save the model with `save_pretrained(..., safe_serialization=True)`."
)
E003 = (
    "E003: label {label!r} in config.id2label is neither 'O' nor B-/I- prefixed. Use BIO or IOB2 labels "
    "such as B-PROBLEM, I-PROBLEM, O."
)
# E004, E005 (device errors) are D001, D002 of pipeline/device.py now; E008 is retired. Codes are not reused.
E006 = "E006: a batch of one window of {tokens} tokens does not fit in device memory even after splitting."
E007 = "E007: input batch lacks column {column!r} of the notes table (schemas/tables/notes.yaml)."
E010 = (
    "E010: NER weights {file} in {path} do not match the sha256 in its model card (expected {expected}, found "
    "{found}): the file was changed or damaged after training. Restore it or retrain with `ehr-pipeline train-ner`; "
    "a changed checkpoint is never loaded."
)
E011 = (
    "E011: the model card of {path} lists weights {file} that are missing. Restore the folder or retrain it."
)
E009 = ("E009: NER precision {precision!r} is not one of auto, fp32, bf16, fp16, int8 (fp16 only on CUDA, int8 only "
        "on CPU). Set EHR_NER_PRECISION.")
