"""Using a trained model: loading a checkpoint, COCO results rows, pictures. Never imports Determined."""
