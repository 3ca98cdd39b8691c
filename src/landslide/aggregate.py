"""``python -m landslide.aggregate <job folders> --out <dir>``: merge folds trained as separate jobs into one run
directory (the implementation lives beside the training loop it mirrors: :mod:`landslide.training.aggregate`)."""

from landslide.training.aggregate import main

if __name__ == "__main__":
    main()
