"""Images to model pixels (the preprocessing contract) and folder datasets."""
from s3f_edge.data.preprocess import (
    IMAGE_SUFFIXES,
    ImageDecodeError,
    Preprocessing,
    decode_image,
    load_image,
    preprocess_array,
)

__all__ = ["IMAGE_SUFFIXES", "ImageDecodeError", "Preprocessing", "decode_image", "load_image", "preprocess_array"]
