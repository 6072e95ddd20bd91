"""The runtime: stylize images with exported models in onnxruntime (`Stylizer`, the `stylenet`
command). Torch-free: it is all that `pip install stylenet` installs and imports."""
