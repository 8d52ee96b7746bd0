"""The typed, validated settings of an experiment: model, optimisation, data and run, parsed once."""
