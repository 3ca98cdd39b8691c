"""Generated data: difficulty profiles of the patch generator, the embedded release, synthetic scenes."""
