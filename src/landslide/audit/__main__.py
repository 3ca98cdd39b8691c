"""``python -m landslide.audit run_dir=<training run>``: the label audit (:mod:`landslide.audit`)."""

from landslide.cli import audit_entry

if __name__ == "__main__":
    audit_entry()
