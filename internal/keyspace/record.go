package keyspace

// RecordKey is the Redis hash holding job id's record.
func RecordKey(id string) string { return "storekeeper:job:" + id }
