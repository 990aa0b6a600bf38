"""Target torch-cuda: torch.compile on a CUDA GPU, 2:4 Linear weights as semi-structured tensors."""
