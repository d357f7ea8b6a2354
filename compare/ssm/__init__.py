"""The Mamba block and its selective scan (reference, native CPU and CUDA kernels).

Imports only `base`."""
