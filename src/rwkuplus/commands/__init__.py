"""One module per ``rwkuplus`` subcommand (NAME, HELP, add_arguments, run); found automatically by cli.py."""
