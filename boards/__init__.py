"""FPGA boards (ECP5: ECPIX-5, Colorlight 5A-75B, ButterStick): platform wrappers and bitstream builds come with the boards work."""
