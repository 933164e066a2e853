"""Schedule rules (one per file, dlight-style classes) for CPU and GPU targets, and the dispatcher that picks them.
The passes before them are listed in compiler/pipeline.py; compiler/build.py drives both."""
