"""Run the GIPHY Celebrity Detector over a cpe GCD input list and write its top-5 predictions.

Runs INSIDE the GCD environment (Python 3.6, https://github.com/Giphy/celeb-detection-oss set up as in
MACE's metrics/README.md), from GCD's ``examples`` folder (it reads ``.env`` and ``resources/`` there):

    python /path/to/cpe/shell_scripts/evaluation/gcd_predict.py gcd_inputs_erased.csv gcd_predictions_erased.csv

Input: the CSV written by ``python -m cpe.metrics.evaluate`` (columns file, name, manifest_file).
Output: one row per input image: file, faces (number of recognised faces; 0 = no face), top1, p1 ... top5, p5.
The detector calls are those of MACE's metrics/evaluate_by_GCD.py (face detector, then FaceRecognizer top_n=5;
the first recognised face's ranking is kept). Standard library only besides GCD itself.
"""

import argparse
import csv
import os

from dotenv import load_dotenv
from model_training.helpers.face_recognizer import FaceRecognizer
from model_training.helpers.labels import Labels
from model_training.preprocessors.face_detection.face_detector import FaceDetector
from model_training.utils import preprocess_image
from skimage import io

TOP_N = 5


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inputs", help="gcd_inputs_<subset>.csv written by cpe.metrics.evaluate")
    parser.add_argument("predictions", help="CSV to write")
    args = parser.parse_args()

    load_dotenv(".env")
    data_dir = os.getenv("APP_DATA_DIR")
    image_size = int(os.getenv("APP_FACE_SIZE", 224))
    use_cuda = os.getenv("APP_USE_CUDA") == "true"
    labels = Labels(resources_path=data_dir)
    detector = FaceDetector(data_dir, margin=float(os.getenv("APP_FACE_MARGIN", 0.2)), use_cuda=use_cuda)
    recognizer = FaceRecognizer(labels=labels, resources_path=data_dir, use_cuda=use_cuda, top_n=TOP_N)

    with open(args.inputs, newline="", encoding="utf-8") as f:
        files = [row["file"] for row in csv.DictReader(f)]
    columns = ["file", "faces"]
    for i in range(1, TOP_N + 1):
        columns += [f"top{i}", f"p{i}"]
    tmp = args.predictions + ".tmp"
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for number, path in enumerate(files, 1):
            faces = [preprocess_image(face, image_size) for face, _ in detector.perform_single(io.imread(path))]
            predictions = recognizer.perform(faces)
            row = {"file": path, "faces": len(predictions)}
            if predictions:
                for i, (label, prob) in enumerate(predictions[0][0][:TOP_N], 1):
                    row[f"top{i}"] = str(label)
                    row[f"p{i}"] = f"{prob:.6f}"
            writer.writerow(row)
            if number % 100 == 0:
                print(f"{number} / {len(files)} images")
    os.replace(tmp, args.predictions)


if __name__ == "__main__":
    main()
