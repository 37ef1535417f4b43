package jobs

// BatchRequest asks for one job of Kind on every store.
type BatchRequest struct {
	Kind    Kind
	Params  Params
	Trigger Trigger
	Actor   string
	// List is how many of the batch's jobs Batch.Jobs keeps, the first
	// in the stores' order; 0 keeps every one. The batch key lists them
	// all whatever List is.
	List int
}

// Batch is the answer to EnqueueBatch: the batch id (BatchKey lists its
// jobs), how many jobs it has (New made for it, Deduplicated already in
// flight), and its jobs in the stores' order, the first BatchRequest.List
// of them; a store whose equal job was already in flight has that job,
// Deduplicated.
type Batch struct {
	ID                       string
	Total, New, Deduplicated int
	Jobs                     []Enqueued
}

// Add counts e and keeps it when the batch lists fewer than list jobs
// (every one when list is 0).
func (b *Batch) Add(e Enqueued, list int) {
	b.Total++
	if e.Deduplicated {
		b.Deduplicated++
	} else {
		b.New++
	}
	if list <= 0 || len(b.Jobs) < list {
		b.Jobs = append(b.Jobs, e)
	}
}

// NewBatchID returns a new batch id: time-sortable like a job id, with a
// "b" for the job id's "j".
func NewBatchID() string { return "b" + NewID()[1:] }
