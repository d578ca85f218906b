import json

from uinfo_fast.cli import main


def test_demo_writes_table_json_and_plot(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--n-train", "1500", "--n-test", "600", "--dim", "24", "--layers", "2", "--out", str(out)]) == 0
    rows = json.loads((out / "usable_information.json").read_text())
    assert {(r["feature_set"], r["label_set"]) for r in rows} == {
        (f"layer{i}", lab) for i in (1, 2) for lab in ("coarse", "fine")}
    # Deeper synthetic layers carry more signal.
    bits = {(r["feature_set"], r["label_set"]): r["usable_information_bits"] for r in rows}
    assert bits["layer2", "coarse"] > bits["layer1", "coarse"] > 0
    assert (out / "usable_information.png").stat().st_size > 1000
    assert "I_u (bits)" in capsys.readouterr().out
