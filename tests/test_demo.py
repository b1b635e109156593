"""`icm demo`: what a newcomer sees without a PBX."""

from icm.demo import run_demo


async def test_demo_places_every_kind_of_call(capsys):
    assert await run_demo(listen="127.0.0.1:0", once=True) == 0
    out = capsys.readouterr().out
    for expected in (
        "status=DIAL manager=101 (Anna (sales))",
        "ICM_STATUS=ANSWERED ICM_MANAGER=101",
        "status=NOTFOUND",
        "ICM_STATUS=OFFLINE ICM_MANAGER=102",
        "ICM_STATUS=BUSY ICM_MANAGER=103",
        "number=+74951234567 status=DIAL manager=104",
        "ICM_STATUS=NOANSWER ICM_MANAGER=104",
        "status=ANONYMOUS",
        "status=EXCEPTION",
    ):
        assert expected in out, expected
