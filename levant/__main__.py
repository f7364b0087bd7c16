from levant.cli import app

app()
