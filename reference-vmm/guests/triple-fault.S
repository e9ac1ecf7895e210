# triple-fault: ask the VMM to synthesize a triple fault (through vcpu-events);
# the run must end in KVM_EXIT_SHUTDOWN, never reach the `hlt`.
.include "common.inc"

.text
start:
    mov al, SYNC_TRIPLE_FAULT
    out PORT_SYNC, al
    REPORT 0, 0xdead        # only reached if no triple fault happened
1:  hlt
    jmp 1b
