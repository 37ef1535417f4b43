package store

// crashHook, when set, is called at every named crash point inside backup
// and restore. The crash tests set it in a child process to kill that
// process with SIGKILL at one point; it is nil otherwise.
var crashHook func(point string)

func crashPoint(point string) {
	if crashHook != nil {
		crashHook(point)
	}
}
