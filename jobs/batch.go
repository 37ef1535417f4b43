package jobs

// BatchRequest asks for one job of Kind on every store.
type BatchRequest struct {
	Kind    Kind
	Params  Params
	Trigger Trigger
	Actor   string
}

// Batch is the answer to EnqueueBatch: the batch id (BatchKey lists its
// jobs) and one job per store, in the stores' order; a store whose equal
// job was already in flight has that job, Deduplicated.
type Batch struct {
	ID   string
	Jobs []Enqueued
}

// NewBatchID returns a new batch id: time-sortable like a job id, with a
// "b" for the job id's "j".
func NewBatchID() string { return "b" + NewID()[1:] }
