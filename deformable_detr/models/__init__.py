"""The Deformable DETR network, its matcher, losses and post-processing; `build.build_model` assembles them."""
