"""Export one of scikit-learn's bundled data sets as CSV for infergate's
drift detection benchmark (bench/detection).

Usage: python3 sklearn_data.py breast_cancer|wine [OUT.csv]

The CSV has a header of the feature names then "class", one row per sample,
features written with repr (no rounding), the class as an integer. Without
OUT it goes to stdout.
"""
import csv
import sys

from sklearn import datasets

LOADERS = {"breast_cancer": datasets.load_breast_cancer, "wine": datasets.load_wine}


def main():
    if len(sys.argv) not in (2, 3) or sys.argv[1] not in LOADERS:
        sys.exit("usage: sklearn_data.py breast_cancer|wine [OUT.csv]")
    bunch = LOADERS[sys.argv[1]]()
    out = open(sys.argv[2], "w", newline="") if len(sys.argv) == 3 else sys.stdout
    w = csv.writer(out)
    w.writerow([str(n).replace(" ", "_") for n in bunch.feature_names] + ["class"])
    for x, y in zip(bunch.data, bunch.target):
        w.writerow([repr(float(v)) for v in x] + [int(y)])
    out.flush()


if __name__ == "__main__":
    main()
