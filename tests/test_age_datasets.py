"""Readers of the standard benchmarks on tiny trees written in their exact distributed layouts."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from fakes_data import write_jpeg
from scipy.io import savemat

from ordinalage.cli import main
from ordinalage.config import DataConfig
from ordinalage.data.adience import ADIENCE_GROUPS
from ordinalage.data.imdbwiki import age_at_photo
from ordinalage.data.sources import read_sources
from ordinalage.errors import UsageError
from ordinalage.groups import AgeGroups

CFG = DataConfig()


def _read(spec: str, skipped: dict | None = None):
    return read_sources([spec], CFG, skipped)


def _by_name(records) -> dict:
    return {Path(r.path).name: r for r in records}


# --------------------------------------------------------------------------------- file-name kinds


def test_afad_age_and_gender_folders(tmp_path, capsys):
    root = tmp_path / "AFAD-Full"
    for i, rel in enumerate(["15/111/638-0.jpg", "39/112/406208-0.jpg", "72/111/1-3.jpg", "39/113/x.jpg"]):
        write_jpeg(root / rel, i)
    (root / "AFAD-Full.txt").write_text("./15/111/638-0.jpg\n")
    skipped: dict = {}
    recs = _by_name(_read(f"afad:{root}", skipped))
    assert {n: (r.age, r.meta) for n, r in recs.items()} == {
        "638-0.jpg": (15.0, {"gender": 0}), "406208-0.jpg": (39.0, {"gender": 1}), "1-3.jpg": (72.0, {"gender": 0})}
    assert skipped == {f"afad:{root}": {"not named like <age>/<111|112>/<image>.jpg": 1}}
    assert "kept 3, skipped 1: 1 not named like" in capsys.readouterr().err


def test_morph_album_names(tmp_path):
    for i, name in enumerate(["102146_03M36.JPG", "009055_1F46.JPG", "102146_00M34.JPG", "readme.jpg"]):
        write_jpeg(tmp_path / "Album2" / name, i)
    recs = _by_name(_read(f"morph:{tmp_path}"))
    assert {n: (r.age, r.meta["subject"], r.meta["gender"]) for n, r in recs.items()} == {
        "102146_03M36.JPG": (36.0, "102146", 0), "009055_1F46.JPG": (46.0, "009055", 1),
        "102146_00M34.JPG": (34.0, "102146", 0)}


def _coral_morph(tmp_path: Path) -> tuple[Path, Path]:
    """The CORAL paper's MORPH CSVs (unnamed index column = file name, age = age - 16) and the images."""
    csvs, images = tmp_path / "datasets", tmp_path / "morph2-aligned"
    csvs.mkdir()
    header = ",id_num,picture_num,race,Male,facial_hair,age,glasses,quality\n"
    rows = {"train": ["321798_03M36.jpg", "285760_00M18.jpg"], "valid": ["315806_00M16.jpg"],
            "test": ["067089_5M41.jpg", "999999_0M20.jpg"]}
    seed = 0
    for split, names in rows.items():
        lines = []
        for name in names:
            age = int(name.split("M")[1][:-4])
            lines.append(f"{name},{int(name[:6])},0,B,1,,{age - 16},,GOOD\n")
            if not name.startswith("999999"):  # one listed image is missing on disk
                write_jpeg(images / name, seed)
            seed += 1
        (csvs / f"morph2_{split}.csv").write_text(header + "".join(lines))
    return csvs, images


def test_morph_coral_csvs_keep_their_splits_and_true_ages(tmp_path):
    csvs, images = _coral_morph(tmp_path)
    skipped: dict = {}
    recs = _by_name(_read(f"morph:{csvs}?images={images}", skipped))
    assert {n: (r.age, r.split, r.meta["label"]) for n, r in recs.items()} == {
        "321798_03M36.jpg": (36.0, "train", 20), "285760_00M18.jpg": (18.0, "train", 2),
        "315806_00M16.jpg": (16.0, "val", 0), "067089_5M41.jpg": (41.0, "test", 25)}
    assert list(skipped.values()) == [{"listed in a CSV but not found under the image folder": 1}]
    one = _by_name(_read(f"morph:{csvs / 'morph2_test.csv'}?images={images}"))
    assert list(one) == ["067089_5M41.jpg"] and one["067089_5M41.jpg"].split == "test"


def test_coral_csv_label_off_the_common_offset_names_the_line(tmp_path):
    csvs, images = _coral_morph(tmp_path)
    path = csvs / "morph2_train.csv"
    path.write_text(path.read_text().replace(",2,,GOOD", ",5,,GOOD"))  # 285760_00M18: label 5, not 18 - 16
    with pytest.raises(UsageError, match=rf"{path}:3, column 'age': label 5 is age 18 - 13"):
        _read(f"morph:{csvs}?images={images}")
    with pytest.raises(UsageError, match="unknown option 'imgs=x'"):
        _read(f"morph:{csvs}?imgs=x")


def test_afad_coral_csv_with_path_column(tmp_path):
    write_jpeg(tmp_path / "AFAD-Full" / "39" / "112" / "406208-0.jpg", 1)
    (tmp_path / "afad_test.csv").write_text("file,path,age,gender\n406208-0.jpg,39/112/406208-0.jpg,24,female\n")
    (rec,) = _read(f"afad:{tmp_path / 'afad_test.csv'}?images={tmp_path / 'AFAD-Full'}")
    assert (rec.age, rec.split, rec.meta) == (39.0, "test", {"gender": 1, "label": 24})


def test_cacd_fgnet_agedb_names_and_subjects(tmp_path):
    for i, name in enumerate(["14_Aaron_Johnson_0001.jpg", "53_Nicole_'Snooki'_Polizzi_0004.jpg", "x.jpg"]):
        write_jpeg(tmp_path / "CACD2000" / name, i)
    cacd = _by_name(_read(f"cacd:{tmp_path / 'CACD2000'}"))
    assert {n: (r.age, r.meta["subject"]) for n, r in cacd.items()} == {
        "14_Aaron_Johnson_0001.jpg": (14.0, "Aaron_Johnson"), "53_Nicole_'Snooki'_Polizzi_0004.jpg": (53.0, "Nicole_'Snooki'_Polizzi")}
    for i, name in enumerate(["001A02.JPG", "001A43a.JPG", "082A18.JPG", "Thumbs.jpg"]):
        write_jpeg(tmp_path / "FGNET" / "images" / name, 10 + i)
    fg = _by_name(_read(f"fgnet:{tmp_path / 'FGNET'}"))
    assert {n: (r.age, r.meta["subject"]) for n, r in fg.items()} == {
        "001A02.JPG": (2.0, "001"), "001A43a.JPG": (43.0, "001"), "082A18.JPG": (18.0, "082")}
    for i, name in enumerate(["0_MariaCallas_35_f.jpg", "16487_SergeiRachmaninoff_45_m.jpg", "bad_1.jpg"]):
        write_jpeg(tmp_path / "AgeDB" / name, 20 + i)
    agedb = _by_name(_read(f"agedb:{tmp_path / 'AgeDB'}"))
    assert {n: (r.age, r.meta) for n, r in agedb.items()} == {
        "0_MariaCallas_35_f.jpg": (35.0, {"subject": "MariaCallas", "gender": 1}),
        "16487_SergeiRachmaninoff_45_m.jpg": (45.0, {"subject": "SergeiRachmaninoff", "gender": 0})}


# --------------------------------------------------------------------------------------- APPA-REAL


def _appa(tmp_path: Path) -> Path:
    root = tmp_path / "appa-real-release"
    head = "file_name,num_ratings,apparent_age_avg,apparent_age_std,real_age\n"
    (root / "train").mkdir(parents=True)
    (root / "gt_avg_train.csv").write_text(head + "000000.jpg,36,5.0,1.146,4\n000001.jpg,63,20.2,3.1,18\n")
    (root / "gt_avg_test.csv").write_text(head + "005613.jpg,38,61.5,6.3,57\n")
    write_jpeg(root / "train" / "000000.jpg", 1)
    write_jpeg(root / "train" / "000000.jpg_face.jpg", 2)
    write_jpeg(root / "train" / "000001.jpg", 3)  # no face crop: the full image
    return root


def test_appa_apparent_and_real_targets(tmp_path):
    root = _appa(tmp_path)
    skipped: dict = {}
    recs = _by_name(_read(f"appa:{tmp_path}", skipped))
    assert {n: (r.age, r.split) for n, r in recs.items()} == {"000000.jpg_face.jpg": (5.0, "train"),
                                                               "000001.jpg": (20.2, "train")}
    assert recs["000000.jpg_face.jpg"].meta == {"real_age": 4.0, "apparent_age": 5.0, "apparent_std": 1.146}
    assert list(skipped.values()) == [{"listed in gt_avg but the image is missing": 1}]  # the test image
    real = _by_name(_read(f"appa:{root}?target=real"))
    assert {n: r.age for n, r in real.items()} == {"000000.jpg_face.jpg": 4.0, "000001.jpg": 18.0}
    with pytest.raises(UsageError, match="target='guess' is not one of apparent, real"):
        _read(f"appa:{root}?target=guess")
    (root / "gt_avg_train.csv").write_text("file_name,apparent_age_avg,real_age\n000000.jpg,five,4\n")
    with pytest.raises(UsageError, match=rf"{root / 'gt_avg_train.csv'}:2, column 'apparent_age_avg': 'five'"):
        _read(f"appa:{root}")


# ----------------------------------------------------------------------------------------- Adience

FOLD_HEADER = "user_id\toriginal_image\tface_id\tage\tgender\tx\ty\tdx\tdy\ttilt_ang\tfiducial_yaw_angle\tfiducial_score\n"


def _adience(tmp_path: Path, rows_by_fold: dict[int, list[tuple[str, str, str, str, str]]]) -> Path:
    root = tmp_path / "adience"
    seed = 0
    for k, rows in rows_by_fold.items():
        lines = []
        for user, image, face, age, gender in rows:
            lines.append(f"{user}\t{image}\t{face}\t{age}\t{gender}\t301\t105\t640\t641\t0\t94\t1\n")
            if not image.startswith("missing"):
                write_jpeg(root / "aligned" / user / f"landmark_aligned_face.{face}.{image}", seed)
            seed += 1
        (root / f"fold_{k}_data.txt").write_text(FOLD_HEADER + "".join(lines))
    (root / "fold_frontal_0_data.txt").write_text(FOLD_HEADER)  # the frontal subset files are not folds
    return root


ADIENCE_ROWS = {
    0: [("30601258@N03", "10399646885_67c7d20df9_o.jpg", "1", "(25, 32)", "f"),
        ("30601258@N03", "10424815813_e94629b1ec_o.jpg", "2", "(38, 42)", "m"),  # inside 38-43
        ("30601258@N03", "10437979845_5985be4b26_o.jpg", "3", "None", "u")],
    1: [("7153718@N04", "11597751665_28cd5e2e28_o.jpg", "4", "35", "m"),  # a year between groups
        ("7153718@N04", "11598838386_349a0d4849_o.jpg", "5", "(8, 23)", ""),  # spans groups
        ("115321157@N03", "11721357713_1b3e1c7bb4_o.jpg", "6", "(60, 100)", "f"),
        ("115321157@N03", "missing_o.jpg", "7", "(0, 2)", "f"),
        ("115321157@N03", "11721357714_1b3e1c7bb4_o.jpg", "8", "13", "m")],
}


def test_adience_fold_files_groups_subjects_and_skips(tmp_path):
    root = _adience(tmp_path, ADIENCE_ROWS)
    skipped: dict = {}
    recs = _read(f"adience:{root}", skipped)
    got = [(r.age, r.meta["fold"], r.meta["subject"], r.meta["group_label"], r.meta.get("gender")) for r in recs]
    assert got == [(28.5, 0, "30601258@N03", "25-32", 1), (40.5, 0, "30601258@N03", "38-43", 0),
                   (80.0, 1, "115321157@N03", "60-100", 1)]
    assert Path(recs[0].path).name == "landmark_aligned_face.1.10399646885_67c7d20df9_o.jpg"
    assert skipped[f"adience:{root}"] == {"no age label ('None')": 1, "age label outside the eight Adience groups": 3,
                                          "aligned image not found": 1}
    groups = AgeGroups.parse(ADIENCE_GROUPS)
    assert len(groups) == 8 and (groups.indices([r.age for r in recs]) >= 0).all()
    assert list(groups.indices([3, 7, 14, 21, 33])) == [-1, -1, -1, -1, -1]  # the gaps


def test_adience_malformed_age_names_file_and_line(tmp_path):
    root = _adience(tmp_path, {0: [("u1", "a.jpg", "1", "(25, 32)", "f"), ("u1", "b.jpg", "2", "(25; 32)", "f")]})
    with pytest.raises(UsageError, match=rf"{root / 'fold_0_data.txt'}:3, column 'age': '\(25; 32\)'"):
        _read(f"adience:{root}")
    assert main(["data", "stats", "--data", f"adience:{root}", "--json"]) == 2  # the CLI exits 2


# --------------------------------------------------------------------------------------- IMDB-WIKI


def _datenum(y: int, m: int, d: int) -> float:
    from datetime import date

    return float(date(y, m, d).toordinal() + 366)


def _write_mat(path: Path, rows: list[dict], struct: str = "imdb", drop: str | None = None) -> None:
    """The real layout: a 1x1 struct whose fields are 1xN (cells of char arrays for the strings)."""
    n = len(rows)

    def cells(key: str) -> np.ndarray:
        arr = np.empty((1, n), dtype=object)
        for i, r in enumerate(rows):
            arr[0, i] = np.array([r[key]]) if key == "full_path" else r[key]
        return arr

    fields = {
        "dob": np.array([[r["dob"] for r in rows]], dtype=float),
        "photo_taken": np.array([[r["photo_taken"] for r in rows]], dtype=np.uint16),
        "full_path": cells("full_path"),
        "gender": np.array([[r.get("gender", 1.0) for r in rows]], dtype=float),
        "name": cells("name"),
        "face_location": cells("face_location"),
        "face_score": np.array([[r["face_score"] for r in rows]], dtype=float),
        "second_face_score": np.array([[r["second_face_score"] for r in rows]], dtype=float),
        "celeb_id": np.array([[r["celeb_id"] for r in rows]], dtype=np.uint16),
    }
    if drop:
        del fields[drop]
    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(str(path), {struct: fields})


def _imdb_rows() -> list[dict]:
    base = {"gender": 1.0, "name": "Fred Astaire", "face_location": np.zeros(4), "celeb_id": 6488,
            "face_score": 1.46, "second_face_score": math.nan}
    return [
        {**base, "full_path": "01/nm0000001_rm124825600_1899-5-10_1968.jpg", "dob": _datenum(1899, 5, 10),
         "photo_taken": 1968},  # born before July: 1968 - 1899 = 69
        {**base, "full_path": "01/nm0000001_rm3343756032_1899-8-10_1970.jpg", "dob": _datenum(1899, 8, 10),
         "photo_taken": 1970, "gender": 0.0, "celeb_id": 7},  # born after June: 70 - 1 = 70
        {**base, "full_path": "02/noface.jpg", "dob": _datenum(1970, 1, 1), "photo_taken": 2000,
         "face_score": -math.inf},
        {**base, "full_path": "02/twofaces.jpg", "dob": _datenum(1970, 1, 1), "photo_taken": 2000,
         "second_face_score": 2.5},
        {**base, "full_path": "02/nodob.jpg", "dob": math.nan, "photo_taken": 2000},
        {**base, "full_path": "02/old.jpg", "dob": _datenum(1800, 1, 1), "photo_taken": 2011},
        {**base, "full_path": "02/gone.jpg", "dob": _datenum(1980, 1, 1), "photo_taken": 2010},
    ]


def test_imdbwiki_mat_ages_cleaning_and_counts(tmp_path, capsys):
    rows = _imdb_rows()
    mat = tmp_path / "imdb_crop" / "imdb.mat"
    _write_mat(mat, rows)
    for i, r in enumerate(rows):
        if r["full_path"] != "02/gone.jpg":
            write_jpeg(mat.parent / r["full_path"], i)
    skipped: dict = {}
    recs = _by_name(_read(f"imdbwiki:{tmp_path}", skipped))
    assert {n: (r.age, r.meta) for n, r in recs.items()} == {
        "nm0000001_rm124825600_1899-5-10_1968.jpg": (69.0, {"subject": "6488", "gender": 0}),
        "nm0000001_rm3343756032_1899-8-10_1970.jpg": (70.0, {"subject": "7", "gender": 1})}
    assert skipped[f"imdbwiki:{tmp_path}"] == {
        "face_score below 1 (no face or a weak one)": 1, "a second face in the photo": 1,
        "missing or impossible date of birth": 1, "age outside 0-100": 1, "image not found": 1}
    assert "kept 2, skipped 5" in capsys.readouterr().err
    assert len(_read(f"imdbwiki:{mat}?min_score=2")) == 0  # every face_score is 1.46


def test_imdbwiki_wiki_struct_and_missing_dob(tmp_path):
    rows = [{**r, "celeb_id": 0} for r in _imdb_rows()[:1]]
    wiki = tmp_path / "wiki_crop" / "wiki.mat"
    _write_mat(wiki, rows, struct="wiki")
    write_jpeg(wiki.parent / rows[0]["full_path"], 0)
    (rec,) = _read(f"imdbwiki:{tmp_path}")
    assert rec.age == 69.0
    _write_mat(wiki, rows, struct="wiki", drop="dob")
    with pytest.raises(UsageError, match=rf"{wiki}: struct 'wiki' has no field 'dob'"):
        _read(f"imdbwiki:{wiki}")


def test_age_at_photo_mid_year_rule():
    assert age_at_photo(_datenum(1990, 6, 30), 2020) == 30
    assert age_at_photo(_datenum(1990, 7, 1), 2020) == 29
    assert age_at_photo(math.nan, 2020) is None and age_at_photo(10.0, 2020) is None
