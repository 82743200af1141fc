"""Deployment: ONNX export (`medheads export`) and bulk prediction (`medheads predict`). Never shipped in checkpoints;
`modeling_onnx.py` is the one file copied into exported ONNX folders."""
