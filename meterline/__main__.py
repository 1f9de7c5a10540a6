from meterline.cli import app

app(prog_name="meterline")
