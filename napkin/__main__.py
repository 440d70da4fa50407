from napkin.cli import console

console()
