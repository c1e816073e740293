"""Evaluation of finished runs: adaptation curves over inner steps on held-out tasks, their
statistics (mean, 95% confidence interval, median) the way papers report them, the report's
table and figure, and a trained image classifier adapted to a person's own images. It may
import only metajax.runs, metajax.tasks, metajax.config, metajax.core, metajax.data,
metajax.options, metajax.plots, metajax._files and metajax._validation.
"""
