from protsteps.cli import run

run()
