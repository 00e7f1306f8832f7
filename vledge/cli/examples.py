"""Each command's examples, shown at the end of its ``--help``: the commands a first hour runs, on the
built-in data sets (fashion-mnist needs its files: apt-get install dataset-fashion-mnist; digits needs
the ``digits`` extra)."""

OVERVIEW = """\
a first run (digits ships with scikit-learn: pip install "vledge[compress,onnx,digits]"):
  vledge train --data digits --out runs/teacher
  vledge compress --teacher runs/teacher --target cpu --data digits --out runs/bundle
  vledge check runs/bundle --teacher runs/teacher --data digits
  vledge run runs/bundle photo.jpg --labels "a cat,a dog"
on a device (pip install "vledge[onnx]", no torch): run, watch, annotate, serve, labels, eval BUNDLE, verify.
-v/-q and --log-file work before or after the command; `vledge COMMAND --help` shows its examples."""

EXAMPLES = {
    "train": """\
  vledge train --data digits --out runs/teacher
  vledge train --data fashion-mnist --out runs/teacher --epochs 5 --threads 2 --log-file train.log
  vledge train --lora --base runs/teacher --data photos/ --out runs/teacher-lora""",
    "eval": """\
  vledge eval runs/bundle --data digits
  vledge eval runs/bundle --data photos/ --classes names.txt --templates 'a photo of a {}.' --json eval.json
  vledge eval runs/teacher --data captions.csv --recall-k 1,5,10 --json eval.json""",
    "compress": """\
  vledge compress --teacher runs/teacher --target cpu --data digits --out runs/bundle
  vledge compress --teacher clip-folder/ --target jetson --data photos/ --labels labels.txt --out runs/jetson
  vledge compress --teacher runs/teacher --target cpu --out runs/bundle --tolerance 1 --json report.json""",
    "check": """\
  vledge check runs/bundle --teacher runs/teacher --data digits
  vledge check runs/bundle --teacher runs/teacher --device cuda --strict --json check.json""",
    "run": """\
  vledge run runs/bundle photo.jpg
  vledge run runs/bundle *.jpg --labels "a cat,a dog,a car" --top-k 2
  vledge run runs/bundle frame.png --labels @labels.txt --device NPU --strict --json""",
    "bench": """\
  vledge bench --teacher runs/teacher --data digits --quick --out bench-report
  vledge bench runs/bundle --teacher runs/teacher --rows none --out bench-report""",
    "targets": """\
  vledge targets
  vledge targets --json""",
    "students": """\
  vledge students
  vledge students --teacher clip-folder/ --target jetson     # ranked for your teacher, cheapest first
  vledge students --json""",
    "watch": """\
  vledge watch runs/bundle video.mp4 --labels "a person,a car" --fps 5
  vledge watch runs/bundle rtsp://cam.local/stream --labels "a person" --enter-after 1 --out events.jsonl""",
    "annotate": """\
  vledge annotate runs/bundle photos/ --labels "a cat,a dog" --out labels.csv
  vledge annotate runs/bundle photos/ --labels @labels.txt --out labels.jsonl --review-below 0.6""",
    "serve": """\
  vledge serve runs/bundle
  VLEDGE_PORT=9000 vledge serve runs/bundle --host 0.0.0.0 --preload --strict""",
    "labels": """\
  vledge labels runs/bundle
  vledge labels runs/bundle --set labels.txt --templates 'a photo of {}'""",
    "keygen": """\
  vledge keygen --out keys/""",
    "sign": """\
  vledge sign runs/bundle --key keys/vledge-signing.key""",
    "verify": """\
  vledge verify runs/bundle --trusted-key keys/vledge-signing.pub""",
}
