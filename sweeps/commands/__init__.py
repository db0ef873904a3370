"""One module per `sweeps` subcommand, each with HELP, add_arguments(parser) and run(args)."""
