"""mmkd_helpers: the package behind the mmkd course on knowledge distillation for multi-modal brain-tumour
segmentation with missing modalities. Importing it is cheap: heavy libraries load where they are used."""

__version__ = "0.1.0"
