"""Fast execution of the ΠGDM step: compiled VJP, CUDA graphs, precision, batching."""
