from tasks.smoke import is_degenerate, smoke_verdict

GOOD = ([1, 2, 3, 4, 5, 6], " Paris, the largest city of France.")
LOOP = ([7, 7, 7, 7, 7, 7, 7, 7], " strugg strugg strugg strugg")


def test_degenerate_text() -> None:
    assert is_degenerate([], "")
    assert is_degenerate([5, 6], "   ")
    assert is_degenerate(*LOOP)
    assert is_degenerate([1, 2, 1, 2, 1, 2, 1, 2, 1, 2], " A B A B A B A B A B")
    assert not is_degenerate(*GOOD)


def test_candidate_fails_where_baseline_is_fine() -> None:
    result = smoke_verdict(["a", "b"], [GOOD, GOOD], [LOOP, LOOP])
    assert result["verdict"] == "fail"
    assert "on 2 of 2 prompts" in result["reason"] and "strugg" in result["reason"]


def test_one_bad_prompt_of_four_passes() -> None:
    assert smoke_verdict(list("abcd"), [GOOD] * 4, [LOOP, GOOD, GOOD, GOOD])["verdict"] == "pass"


def test_degenerate_baseline_is_not_informative() -> None:
    result = smoke_verdict(["a"], [LOOP], [LOOP])
    assert result["verdict"] == "not-informative"
