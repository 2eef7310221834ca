"""Where a result was measured: GPU, driver, commit, date (stored with every committed result)."""
import datetime
import os
import subprocess


def environment() -> dict:
    info = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    if os.environ.get("SG_COMMIT"):           # the device copy has no .git: the caller says
        info["commit"] = os.environ["SG_COMMIT"]
    else:
        try:
            info["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"],
                                            capture_output=True, text=True).stdout.strip()
        except OSError:
            info["commit"] = "unknown"
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version",
                              "--format=csv,noheader"], capture_output=True, text=True).stdout
        name, driver = [s.strip() for s in smi.splitlines()[0].split(",")]
        info.update(gpu=name, driver=driver)
    except (OSError, IndexError, ValueError):
        info.update(gpu="unknown", driver="unknown")
    try:
        import torch
        info["torch"] = torch.__version__
    except ImportError:
        pass
    return info
