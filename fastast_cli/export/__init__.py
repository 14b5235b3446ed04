"""Deploying trained models: ONNX files with merging baked in, Hugging Face AST folders, and
inference backends (eager, torch.compile, onnxruntime) behind one interface."""
