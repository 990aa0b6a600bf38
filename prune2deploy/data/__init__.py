"""Data for calibration, accuracy and recovery: samples from files, images, text or callables; metrics;
the batches one compile uses."""
