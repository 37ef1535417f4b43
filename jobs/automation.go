package jobs

import (
	"time"
)

// PauseInfo says who paused a store and when.
type PauseInfo struct {
	Actor string    `json:"actor"`
	At    time.Time `json:"at"`
}

// NodeInfo is a node's heartbeat value.
type NodeInfo struct {
	Node     string   `json:"node"`
	Host     string   `json:"host"`
	Instance string   `json:"instance"`
	Stores   []string `json:"stores"`
	// Lost are the stores this node has but does not serve: another
	// claim holds their lease (store -> the node that holds it).
	Lost      map[string]string `json:"lost,omitempty"`
	StartedAt time.Time         `json:"started_at"`
	At        time.Time         `json:"at"`
}

// NodeStatus is a known node and whether its heartbeat is alive.
type NodeStatus struct {
	Node string    `json:"node"`
	Up   bool      `json:"up"`
	Info *NodeInfo `json:"info,omitempty"` // the live heartbeat
}

// ScheduleInfo is one kind's schedule on a node.
type ScheduleInfo struct {
	Spec string    `json:"spec"` // a cron spec, or "off"
	Next time.Time `json:"next,omitzero"`
	Last time.Time `json:"last,omitzero"`
}

// NodeSchedules is what a node schedules, for the stores it owns.
type NodeSchedules struct {
	Node   string                `json:"node"`
	Stores []string              `json:"stores"`
	Kinds  map[Kind]ScheduleInfo `json:"kinds"`
	At     time.Time             `json:"at"`
}

// Incident is a store's corruption as reported.
type Incident struct {
	ID           string `json:"id"`
	Evidence     string `json:"evidence"`
	Action       string `json:"action"`
	RestoreJobID string `json:"restore_job_id,omitempty"`
	BackupID     string `json:"backup_id,omitempty"`
	// RestoreAt: the automatic restore rebuilds the store as it was at
	// this moment (the corruption's detection) from a backup and the
	// shipped commit log, instead of restoring BackupID alone.
	RestoreAt time.Time `json:"restore_at,omitzero"`
	Node      string    `json:"node"`
	At        time.Time `json:"at"`
}
