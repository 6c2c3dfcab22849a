"""FPGA boards (ECP5: ECPIX-5, Colorlight 5A-75B, ButterStick).

Platform wrappers and bitstream builds come with the boards work.
"""
