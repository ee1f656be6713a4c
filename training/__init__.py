"""framewatch training: data sets, the multi-modality guidance network and its baselines,
training loops, evaluation, reports and export to the engines' artifact format."""
