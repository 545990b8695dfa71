"""The preemption flag in-process: set-up phase raises at once, training phase only records the request."""

from __future__ import annotations

import os
import signal

import pytest

from deltalm.engine.preemption import Preempted, PreemptionFlag, install_for_setup


def test_setup_phase_raises_training_phase_records():
    before = signal.getsignal(signal.SIGTERM)
    flag = install_for_setup()
    try:
        assert PreemptionFlag.for_process() is flag and flag.installed
        with pytest.raises(Preempted) as caught:
            os.kill(os.getpid(), signal.SIGTERM)
        assert caught.value.exit_code == 143 and "SIGTERM during set-up" in str(caught.value)
        assert not isinstance(caught.value, Exception)  # no `except Exception` in set-up code swallows it
        flag.requested = False
        flag.install(stop_now=True)
        flag.training_started()
        os.kill(os.getpid(), signal.SIGUSR1)
        assert flag.requested and flag.signal_name == "SIGUSR1"
    finally:
        flag.uninstall()
    assert signal.getsignal(signal.SIGTERM) is before
    assert PreemptionFlag.for_process() is not flag  # a later Trainer gets a fresh, uninstalled flag
