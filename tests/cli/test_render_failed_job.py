"""`tunewire jobs show` of a failed job: its one-line error, where its log is, restarts."""

from __future__ import annotations

from tunewire.cli.render import job_details
from tunewire.v1 import training_job_pb2 as training_job_pb


def test_a_failed_job_shows_its_error_and_how_to_read_its_log():
    job = training_job_pb.TrainingJob(
        id="job-0123456789ab",
        state=training_job_pb.JOB_STATE_FAILED,
        restart_count=3,
        resume_count=3,
    )
    job.error.message = "the worker was killed by signal 9 (SIGKILL); its log has the details"
    text = job_details(job)
    assert "error      the worker was killed by signal 9 (SIGKILL)" in text
    assert "(its log: tunewire logs job-0123456789ab --tail 50)" in text
    assert "restarts   3 after the worker died, 3 resume(s) from a checkpoint" in text
