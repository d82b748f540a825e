"""What every Python worker runs on: the Faust app factory (`app`) and the arm runtime (`arm`)."""
