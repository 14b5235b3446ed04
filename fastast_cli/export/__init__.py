"""Deploying trained models: ONNX files with merging baked in and Hugging Face AST folders
(the inference backends that run them live in `fastast_cli.inference.backends`)."""
