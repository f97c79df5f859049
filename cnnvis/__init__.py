"""The machinery behind helpers.py that a learner need not read to follow a notebook, one concern per
module; helpers.py imports from them and re-exports their public names.

runtime      TensorFlow's start-up kept out of cells; the inline figure format
machine      versions, GPUs, the distribution strategy
mode         quick mode (CNNVIS_QUICK), CI's small run
paths        where data, models and figures live (CNNVIS_HOME, Drive, the repository)
colab        Colab: Drive mounting and flushing, secrets
kaggle       Kaggle credentials and the CLI download
dogs_vs_cats the Kaggle archive checked and prepared into the seed's folders
toy_pets     the offline stand-in data with part boxes
data         image folders as tf.data pipelines, the data the notebooks use, shipped photos
files        build a folder in a temporary place, then rename it into place
checkpoints  training records beside each checkpoint; resuming only on the same data
images       image arrays: loading, batches, resizing and scaling maps, blurring
keras3       making any Keras 3 model work: pretrained models, nested layers, cut models, caching
torch_file   a legacy torch.save file of tensors read with numpy, no code run
efficientnet_lite  EfficientNet-Lite0 trained on ImageNet: the architecture and the conversion
gradients    class scores and their gradients, compiled once per model and layer
guided       Guided Backpropagation's copy of a model: guided ReLU and ReLU6
lucid        Lucid's Fourier parameterisation and transformation robustness
metrics      pointing game, deletion/insertion, rank correlation, frame contrast
widgets      plumbing shared by the ipywidgets explorers
"""
