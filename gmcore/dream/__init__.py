"""Score distillation sampling (the core of DreamFusion, Poole et al. 2022) with a trained
diffusion run as the frozen prior: ``gmcore dream RUN --class K`` (or ``--prompt`` with a
text-conditional run).

- :mod:`.render`: a differentiable voxel renderer (emission-absorption along orthographic rays,
  azimuths by bilinear resampling matrices);
- :mod:`.scene`: what is optimised, a voxel grid or (the sanity baseline) an image;
- :mod:`.sds`: the frozen prior eps_hat(x_t; y, t) with classifier-free guidance and the SDS
  surrogate loss, whose gradient is w(t) (eps_hat - eps) dx/dtheta;
- :mod:`.loop`: the optimisation, the views it is judged on, the pictures.

Differences from DreamFusion: an 8x8x8 voxel grid of density and intensity instead of a NeRF
MLP with shading and normals; orthographic views over azimuths only (no elevation, no camera
distance); a class label (or a caption of a small text-conditional run) instead of Imagen's
text embedding; no view-dependent prompts.
"""
from .loop import dream, eval_azimuths, render_views, save_outputs, view_accuracy
from .render import composite, render, rotate, rotation_matrices, rotation_matrix
from .scene import ImageScene, VoxelScene, make_scene
from .sds import SDS, DiffusionPrior, sds_surrogate

__all__ = ["dream", "eval_azimuths", "render_views", "save_outputs", "view_accuracy", "composite", "render",
           "rotate", "rotation_matrices", "rotation_matrix", "ImageScene", "VoxelScene", "make_scene",
           "SDS", "DiffusionPrior", "sds_surrogate"]
