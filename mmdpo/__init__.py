"""mmdpo: Uni-DPO and the DPO family for language and vision-language models."""

__version__ = "0.1.0"
