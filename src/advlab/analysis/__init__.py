"""Analysis of trained networks: spectra of layers and Jacobians, margins, feature-map smoothness."""
from .diagnostics import epoch_diagnostics, spearman
from .features import default_layers, feature_fn, layer_features
from .margins import instance_margins, margin_report, output_margins
from .smoothness import layer_ratios, smoothness
from .spectra import (LayerSpectrum, conv_operator_top_singular_value, conv_singular_values,
                      strided_conv_singular_values,
                      dense_singular_values, jacobian_top_singular_values, layer_spectra,
                      linear_map_top_singular_value, lipschitz_upper_bound)

__all__ = ["dense_singular_values", "conv_singular_values", "strided_conv_singular_values",
           "conv_operator_top_singular_value",
           "linear_map_top_singular_value", "layer_spectra", "LayerSpectrum", "lipschitz_upper_bound",
           "jacobian_top_singular_values", "output_margins", "instance_margins", "margin_report",
           "smoothness", "layer_ratios",
           "epoch_diagnostics", "spearman", "feature_fn", "layer_features", "default_layers"]
