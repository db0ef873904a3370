from sweeps.cli import console

console()
