# Shared by generate.sh, evaluate_toy_gallery.sh and inspect.sh: the experiment-name suffix of the training config
# the erasers came from. CONFIG=.../train_context.yaml (the pinpoint options, docs/pinpoint.md) trains into
# <experiment>_context, so its erasers are found there and its images go to <save_env>_context.
CONFIG=${CONFIG:-}
case "$CONFIG" in *train_context.yaml) VARIANT=_context ;; *) VARIANT= ;; esac
