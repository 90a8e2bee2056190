"""``python -m finemix`` with accelerate's FSDP2 switched on in CPU processes (gloo); tests only.

accelerate turns FSDP on only for GPU-type processes: on a CPU-only machine it runs an FSDP
config file as DDP. ``switch_fsdp_on`` builds the FSDP plugin from the launcher's environment
(set from the config file) and turns it on, so that finemix's FSDP2 path (a sharded training
copy, the gather back) runs on two CPU processes. The product never does this.

    accelerate launch --config_file configs/accelerate/fsdp.yaml --num_processes 2 tests/fsdp_on_cpu.py purify ...
"""

import sys

import finemix.train as train


def switch_fsdp_on() -> None:
    plain_accelerator = train._accelerator

    def fsdp_accelerator():
        from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

        accelerator = plain_accelerator()
        if accelerator.distributed_type != DistributedType.FSDP:
            accelerator.state.fsdp_plugin = FullyShardedDataParallelPlugin()
            accelerator.state.distributed_type = DistributedType.FSDP
        return accelerator

    train._accelerator = fsdp_accelerator


if __name__ == "__main__":
    from finemix.cli import main

    switch_fsdp_on()
    sys.exit(main(sys.argv[1:]))
