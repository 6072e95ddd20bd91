"""stylenet: fast feed-forward neural style transfer."""

__all__ = ["StylenetError", "Stylizer"]


def __getattr__(name: str) -> type:
    """`from stylenet import Stylizer` loads onnxruntime only when asked; training never does."""
    if name == "Stylizer":
        from stylenet.runtime.stylizer import Stylizer

        return Stylizer
    if name == "StylenetError":
        from stylenet.errors import StylenetError

        return StylenetError
    raise AttributeError(f"module 'stylenet' has no attribute {name!r}")
