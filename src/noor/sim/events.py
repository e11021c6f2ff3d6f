"""The event kinds of the discrete-event core (`noor.sim.core`), the heap's second key: at one instant a batch
ends (END), a GPU is repaired (REPAIR), a GPU fails (FAIL), a training job's work is done (TRAINED), a training
job asks for its partition (ASK), a site checks whether serving should pre-empt training (PREEMPT), a sample or
horizon tick (TICK), in that order; arrivals come after them. The training kinds are `noor.sim.training`'s."""

END, REPAIR, FAIL, TRAINED, ASK, PREEMPT, TICK = range(7)
